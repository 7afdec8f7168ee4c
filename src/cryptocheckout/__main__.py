import sys

from cryptocheckout.cli import main

sys.exit(main())
