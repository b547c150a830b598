import sys

from moderation_worker.cli import main

sys.exit(main())
