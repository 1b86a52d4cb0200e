"""The demo landing-zone generator: a synthetic 南海区 (Foshan) delivering every batch contract.

    from demo_data import generate_landing_zone
    summary = generate_landing_zone(Path("landing"), scale=1.0, seed=0)

Same seed and scale give byte-identical files. See `generate` for the API, `defects` for what is
planted, `crosscheck` for the social-assistance test cases and `labels` for the answer key.
"""

from demo_data.generate import DemoSummary, generate_landing_zone
from demo_data.timeline import AS_OF

__all__ = ["AS_OF", "DemoSummary", "generate_landing_zone"]
