#!/usr/bin/env python3
"""Regenerate data/pumps.csv, the synthetic dataset used by this example.

Each row is one pump inspection: the bearing temperature (deg C) and the
vibration level (mm/s) measured that day, and whether the pump failed within
the following week (label 1) or not (label 0). Failing pumps run hotter and
shake more, with enough overlap that a linear model gets roughly 90% right.

The output is fully determined by SEED, so re-running this script reproduces
the committed CSV byte for byte:

    python3 data/generate.py > data/pumps.csv
"""

import random
import sys

SEED = 3
ROWS_PER_CLASS = 100

# label -> ((temperature mean, sd), (vibration mean, sd))
CLASSES = {
    0: ((62.0, 6.0), (2.2, 0.7)),
    1: ((73.0, 6.0), (3.4, 0.8)),
}


def main() -> None:
    rng = random.Random(SEED)
    rows = []
    for label, ((t_mu, t_sd), (v_mu, v_sd)) in CLASSES.items():
        for _ in range(ROWS_PER_CLASS):
            temperature = rng.gauss(t_mu, t_sd)
            vibration = max(0.05, rng.gauss(v_mu, v_sd))
            rows.append((temperature, vibration, label))
    rng.shuffle(rows)

    out = sys.stdout
    out.write("temperature_c,vibration_mm_s,failed\n")
    for temperature, vibration, label in rows:
        out.write(f"{temperature:.1f},{vibration:.2f},{label}\n")


if __name__ == "__main__":
    main()
