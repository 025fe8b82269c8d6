"""`python -m appliance` runs the forge CLI."""

from appliance.cli import main

main()
