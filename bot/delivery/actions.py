"""The buttons of delivered messages that a channel without buttons answers too.

A prompt's response buttons and the contact check's are Slack action_ids, external names
(docs/reference/slack.md); the email channel links each to the response page, which records
the same answer the button does (docs/email.md). Delivery depends on them, so they live here;
the Slack layer names them in handlers/ids.py from here.
"""

from bot.delivery.kinds import ResponseKind

# Prompt buttons
ACK = "handover_ack"
HAS_INFO = "handover_has_info"
NOT_KNOWN = "handover_not_known"
REDIRECT = "handover_redirect"
RESPONSE_ACTIONS = (ACK, HAS_INFO, NOT_KNOWN, REDIRECT)
# The response kind each prompt button records
RESPONSE_KIND_BY_ACTION: dict[str, ResponseKind] = {
    ACK: ResponseKind.ACKNOWLEDGED,
    HAS_INFO: ResponseKind.HAS_INFORMATION,
    NOT_KNOWN: ResponseKind.NOT_KNOWN,
    REDIRECT: ResponseKind.REDIRECTED,
}

# Closing the loop: did the contact promised with "I hold information" happen?
CONTACT_MADE = "handover_contact_made"
CONTACT_MISSED = "handover_contact_missed"
CONTACT_ACTIONS = (CONTACT_MADE, CONTACT_MISSED)
