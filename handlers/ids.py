"""Identifiers shared by Block Kit builders and the listeners that handle them.

The command name, action_ids, callback_ids and block_ids are external names:
docs/reference/slack.md.
"""

from bot import models
from bot.delivery.kinds import ResponseKind

COMMAND = "/handover"

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

# On-call alerts: the button that stops their re-paging (docs/reference/slack.md)
ONCALL_ACK = "handover_oncall_ack"

# Closing the loop: did the contact promised with "I hold information" happen?
CONTACT_MADE = "handover_contact_made"
CONTACT_MISSED = "handover_contact_missed"
CONTACT_ACTIONS = (CONTACT_MADE, CONTACT_MISSED)

# Referral modal
REFERRAL_MODAL = "handover_referral_modal"
BLOCK_EXTERNAL_REF = "external_ref"
BLOCK_CATEGORY = "category"
BLOCK_URGENCY = "urgency"
BLOCK_NOTIFY_PEOPLE = "notify_people"
BLOCK_NOTIFY_TEAMS = "notify_teams"
BLOCK_NOTIFY_ROLES = "notify_roles"
# action_ids inside the modal's input blocks (external selects load options by these)
ACTION_EXTERNAL_REF = "external_ref_input"
ACTION_CATEGORY = "category_select"
ACTION_URGENCY = "urgency_select"
ACTION_NOTIFY_PEOPLE = "notify_people_select"
ACTION_NOTIFY_TEAMS = "notify_teams_select"
ACTION_NOTIFY_ROLES = "notify_roles_select"

# Response modals
HAS_INFO_MODAL = "handover_has_info_modal"
REDIRECT_MODAL = "handover_redirect_modal"

# The referral modal's choices: the domain's vocabulary, re-exported for the Slack layer
CATEGORIES = models.CATEGORIES
URGENCIES = models.URGENCIES
