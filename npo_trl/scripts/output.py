"""What `npo-trl eval <benchmark>` prints and writes: every metric on a line, and the result as JSON."""

import json
import os


def write_result(result: dict, output_json: str) -> None:
    """Print `result["metrics"]` (and `result["attacks"]`, a robustness evaluation's metrics, when there) one per line,
    `null` for a metric that could not be computed, and write `result` to `output_json`."""
    metrics = {**result["metrics"], **(result.get("attacks") or {})}
    width = max(len(key) for key in metrics)
    for key, value in metrics.items():
        print(f"{key:<{width}}  {'null' if value is None else f'{value:.6g}'}")
    os.makedirs(os.path.dirname(os.path.abspath(output_json)), exist_ok=True)
    with open(output_json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"Written to {output_json}.")
