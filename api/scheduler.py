"""Old entry point kept for existing deployments: `python -m api.scheduler` runs `python -m posting.scheduler`."""
import sys

from posting.scheduler import main

if __name__ == "__main__":
    sys.exit(main())
