"""`python -m email_automation` runs the same command line as the `email-automation` script."""

from .cli import main

if __name__ == "__main__":
    main()
