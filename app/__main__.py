"""``python -m app`` and the ``retrain-studio`` script: no arguments opens the GUI."""

import os
import sys


def main(argv=None) -> int:
    from app.cli import main as cli_main

    code = cli_main(sys.argv[1:] if argv is None else argv)
    if argv is None and "tensorflow" in sys.modules:
        # TensorFlow's interpreter teardown takes most of a second; every file we wrote is
        # already closed and renamed into place, so leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
