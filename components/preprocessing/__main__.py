import sys

from components.preprocessing.steps import main

sys.exit(main())
