"""The table the digits benches print: each row's mean metrics over seeds, and its difference from
a base row paired by seed, +- one standard error of the mean difference."""
import numpy as np


def print_paired_table(results, base, metrics, paired=("map@r", "recall@1")):
    """``results``: {row name: [metrics dict per seed]}, every row over the same seeds in the same order."""
    width = max(len(name) for name in results) + 2
    print(f"{'':<{width}}" + "".join(f"{m:>12}" for m in metrics)
          + "".join(f"   {m} - {base}".ljust(24 + len(base)) for m in paired))
    for name, runs in results.items():
        line = f"{name:<{width}}" + "".join(f"{np.mean([r[m] for r in runs]):>12.4f}" for m in metrics)
        for metric in paired:
            diff = np.array([r[metric] for r in runs]) - np.array([r[metric] for r in results[base]])
            se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
            line += f"   {diff.mean():+.4f} +- {se:.4f}".ljust(24 + len(base))
        print(line)
    print("map@r per seed:")
    for name, runs in results.items():
        print(f"  {name:<{width}}" + " ".join(f"{r['map@r']:.3f}" for r in runs))
