import sys

from worldssm.cli import main

sys.exit(main())
