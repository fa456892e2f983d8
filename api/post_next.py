"""Old entry point kept for existing cron lines: `python -m api.post_next` runs `python -m posting.post_next`."""
import sys

from posting.post_next import main

if __name__ == "__main__":
    sys.exit(main())
