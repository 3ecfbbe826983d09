import sys

from basinlab.lifeline import die_with_launcher

die_with_launcher()  # before the heavy imports: a launched worker ends with its launcher

from basinlab.cli import main  # noqa: E402

sys.exit(main())
