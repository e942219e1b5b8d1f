import sys

from adaptergym.cli import main

sys.exit(main())
