"""Run the ovdet demo from a checkout: `python demo/app.py [--model PATH_OR_ID] [--host 127.0.0.1] [--port 7860]`.

The page itself lives in the package (`ovdet.demo.app`), so an installed `ovdet demo` serves the
same thing; install the extra first: pip install 'ovdet[demo]'.
"""

import sys

from ovdet.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
