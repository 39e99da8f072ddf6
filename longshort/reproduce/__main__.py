import sys

from longshort.reproduce.run import main

sys.exit(main())
