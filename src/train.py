"""`python src/train.py [key=value ...]`: one training run (the tutorial's by default).

Thin entry point: compose and check the config with Hydra, train, exit with a status.
User mistakes print one line and exit 2; a run that fails (non-finite loss) exits 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlpsweep.cli import config_or_exit, fail


def main(argv: list[str]) -> int:
    cfg = config_or_exit(argv, usage=__doc__ or "")
    from mlpsweep.model import NonFiniteLossError
    from mlpsweep.training import closing_line, learned_nothing_warning, new_run_dir, train

    run_dir = new_run_dir(Path(cfg.output_dir))
    try:
        result = train(cfg, run_dir)
    except NonFiniteLossError as error:
        return fail(f"{error} (run folder kept for inspection: {run_dir})", code=1)
    except KeyboardInterrupt as error:
        return fail(f"{error or 'interrupted'}; the partial run is in {run_dir} (metrics.json status: interrupted)", code=130)
    print(closing_line(result))
    warning = learned_nothing_warning(result)
    if warning:
        print(warning, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
