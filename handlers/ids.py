"""Identifiers shared by Block Kit builders and the listeners that handle them.

The command name, action_ids, callback_ids and block_ids are external names:
docs/reference/slack.md. The buttons that email answers too are delivery's
(bot/delivery/actions.py): named here from there, so that the Slack layer has one place to
take its identifiers from.
"""

from bot import models
from bot.delivery import actions

COMMAND = "/handover"

# Prompt buttons (delivery's)
ACK = actions.ACK
HAS_INFO = actions.HAS_INFO
NOT_KNOWN = actions.NOT_KNOWN
REDIRECT = actions.REDIRECT
RESPONSE_ACTIONS = actions.RESPONSE_ACTIONS
RESPONSE_KIND_BY_ACTION = actions.RESPONSE_KIND_BY_ACTION

# On-call alerts: the button that stops their re-paging (docs/reference/slack.md)
ONCALL_ACK = "handover_oncall_ack"

# Closing the loop: did the contact promised with "I hold information" happen? (delivery's)
CONTACT_MADE = actions.CONTACT_MADE
CONTACT_MISSED = actions.CONTACT_MISSED
CONTACT_ACTIONS = actions.CONTACT_ACTIONS

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
