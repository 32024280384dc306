import sys

from mocokit.cli import main

sys.exit(main())
