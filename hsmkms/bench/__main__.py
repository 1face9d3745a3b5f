import sys

from hsmkms.bench.run import main

sys.exit(main())
