"""`python -m devstack run|migrate`."""

from devstack.stack import main

main()
