"""`python -m node.cli`: the `ralphswarm` command."""
import sys

from node.cli import main

sys.exit(main())
