"""Start-up time of `mllm --help` and `mllm plugins`, against a bare Python start-up.

Run: python benchmarks/startup.py [--repeat 7]
Prints a table of median wall times and, as its last line, one JSON object of figures
(ratios over `python -c pass`, measured in the same run). Also reports whether torch was
imported by the command (it must not be).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def median_seconds(command: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    python = sys.executable
    commands = {
        "python -c pass": [python, "-c", "pass"],
        "mllm --help": [python, "-m", "mllm", "--help"],
        "mllm plugins": [python, "-m", "mllm", "plugins", "--json"],
    }
    results = {name: median_seconds(cmd, args.repeat) for name, cmd in commands.items()}
    probe = ("import sys, runpy; sys.argv=['mllm','plugins','--json']\n"
             "try:\n runpy.run_module('mllm', run_name='__main__')\nexcept SystemExit: pass\n"
             "print('TORCH', 'torch' in sys.modules, file=sys.stderr)")
    torch_loaded = "TORCH True" in subprocess.run([python, "-c", probe], capture_output=True, text=True).stderr
    baseline = results["python -c pass"]
    print(f"{'command':<20} {'median s':>10} {'x python':>10}")
    for name, seconds in results.items():
        print(f"{name:<20} {seconds:>10.3f} {seconds / baseline:>10.2f}")
    print(f"torch imported by `mllm plugins`: {torch_loaded}")
    print(json.dumps({
        "help_s": round(results["mllm --help"], 4),
        "plugins_s": round(results["mllm plugins"], 4),
        "python_s": round(baseline, 4),
        "help_vs_python": round(results["mllm --help"] / baseline, 3),
        "plugins_vs_python": round(results["mllm plugins"] / baseline, 3),
        "torch_imported": torch_loaded,
    }))


if __name__ == "__main__":
    main()
