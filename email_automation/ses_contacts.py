"""SES list management: one-click unsubscribe that SES hosts, so nothing has to be hosted here.

With SES_CONTACT_LIST (and SES_TOPIC) every send carries `ListManagementOptions`: SES adds the
RFC 8058 one-click `List-Unsubscribe` headers, serves the unsubscribe page, and publishes a
`Subscription` event when someone uses it, which `events` turns into a suppression
(https://docs.aws.amazon.com/ses/latest/dg/sending-email-subscription-management.html).

SES bounces a message to a contact who unsubscribed (https://docs.aws.amazon.com/ses/latest/dg/
sending-email-list-management.html), and such a bounce counts against the account. So before a
claim the contact is read: one who unsubscribed (from all, or from SES_TOPIC) is suppressed here
and never mailed; one who is missing is created (CreateContact, no topic preference of ours, so
the topic's default applies and a person's own choice is never overwritten). The documentation
does not say whether SES needs the contact to exist before the send; creating it makes sure a
later unsubscribe is recorded against it either way.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .bounces import suppress_in_transaction
from .database import transaction
from .transports.aws import one_line

log = logging.getLogger("email_automation.ses")

SOURCE = "ses-contact-list"


def list_management_options(settings: Any) -> dict[str, str] | None:
    """SendEmail's `ListManagementOptions` for the settings, or None without SES_CONTACT_LIST."""
    if not settings.ses_contact_list:
        return None
    return {"ContactListName": settings.ses_contact_list, **({"TopicName": settings.ses_topic} if settings.ses_topic else {})}


def opted_out(contact: dict, topic: str) -> str | None:
    """Why SES would refuse this contact, or None: unsubscribed from all, or from `topic`."""
    if contact.get("UnsubscribeAll"):
        return "unsubscribed from all topics of the SES contact list"
    if not topic:
        return None
    chosen = {p["TopicName"]: p["SubscriptionStatus"] for p in contact.get("TopicPreferences", [])}
    default = {p["TopicName"]: p["SubscriptionStatus"] for p in contact.get("TopicDefaultPreferences", [])}
    if chosen.get(topic, default.get(topic)) == "OPT_OUT":
        return f"opted out of topic {topic} of the SES contact list"
    return None


@dataclass
class ContactList:
    """One run's contact checks; after the first SES error the run goes on without them."""

    client: Any
    name: str
    topic: str = ""
    usable: bool = True

    def refuses(self, conn: sqlite3.Connection, email: str, *, now: datetime) -> str | None:
        """Why `email` must not be mailed (then it is suppressed here as `unsubscribe`), or None.

        A contact that is not on the list yet is added to it.
        """
        if not self.usable:
            return None
        try:
            contact = self.client.get_contact(ContactListName=self.name, EmailAddress=email)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "NotFoundException":
                self._create(email)
                return None
            return self._give_up("GetContact", err)
        except BotoCoreError as err:
            return self._give_up("GetContact", err)
        reason = opted_out(contact, self.topic)
        if reason:
            with transaction(conn):
                suppress_in_transaction(conn, email, "unsubscribe", source=SOURCE, detail=reason, now=now)
        return reason

    def _create(self, email: str) -> None:
        try:
            self.client.create_contact(ContactListName=self.name, EmailAddress=email)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "AlreadyExistsException":
                self._give_up("CreateContact", err)
        except BotoCoreError as err:
            self._give_up("CreateContact", err)

    def _give_up(self, call: str, err: Exception) -> None:
        self.usable = False
        log.warning("SES contact list %s not checked (%s: %s); SES itself still refuses unsubscribed contacts",
                    self.name, call, one_line(err))
        return None


def for_run(client: Any, settings: Any) -> ContactList | None:
    return ContactList(client, settings.ses_contact_list, settings.ses_topic) if settings.ses_contact_list else None
