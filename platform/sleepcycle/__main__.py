import sys

from sleepcycle.cli import main

sys.exit(main())
