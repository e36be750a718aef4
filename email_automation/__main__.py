"""`python -m email_automation` runs the same command line as the `email-automation` script."""

from .cli import console

if __name__ == "__main__":
    console()
