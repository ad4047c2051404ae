"""Launch the runs of an experiment spec (see roma/launch/cli.py for every option).

    python experiments/launch.py quickstart                  # one micro run on AID, local, a few minutes
    python experiments/launch.py scaling_data_micro --dry-run
    python experiments/launch.py status scaling_data_micro
"""
import sys

from roma.launch.cli import main

if __name__ == "__main__":
    sys.exit(main())
