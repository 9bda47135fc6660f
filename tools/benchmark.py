"""Benchmark ovdet against transformers' OwlViT; same options as `ovdet benchmark` (see --help).

    python tools/benchmark.py --models b32,b16,embedded --batch 1,8 --queries 5,80,1203 --out results.json
"""

import sys

from ovdet.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
