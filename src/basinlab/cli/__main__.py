import sys

from basinlab.cli import main

sys.exit(main())
