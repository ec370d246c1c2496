"""Identifiers shared by Block Kit builders and the listeners that handle them (CONTRACT §6)."""

from bot import models

COMMAND = "/handover"

# Prompt buttons
ACK = "handover_ack"
HAS_INFO = "handover_has_info"
NOT_KNOWN = "handover_not_known"
REDIRECT = "handover_redirect"
RESPONSE_ACTIONS = (ACK, HAS_INFO, NOT_KNOWN, REDIRECT)
# The response kind each prompt button records
RESPONSE_KIND_BY_ACTION: dict[str, str] = {
    ACK: models.RESPONSE_ACKNOWLEDGED,
    HAS_INFO: models.RESPONSE_HAS_INFORMATION,
    NOT_KNOWN: models.RESPONSE_NOT_KNOWN,
    REDIRECT: models.RESPONSE_REDIRECTED,
}

# Message metadata
PROMPT_EVENT_TYPE = "handover_prompt"  # a prompt DM: {"referral_id", "prompt_id"} (CONTRACT §6)
# The bot's other messages carry their own types, so "the handover_prompt message in X's DM" is
# always a prompt. Each payload names the referral and the outbox row (`row_id`) it delivers.
CARD_EVENT_TYPE = "handover_card"  # the referral's card in the EDT channel
ALERT_EVENT_TYPE = "handover_alert"  # on call, long gap, unroutable, delivery failure, Slack auth
ESCALATION_EVENT_TYPE = "handover_escalation"  # reminder, escalation DMs, channel post, breach

# Referral modal
REFERRAL_MODAL = "handover_referral_modal"
BLOCK_EXTERNAL_REF = "external_ref"
BLOCK_CATEGORY = "category"
BLOCK_URGENCY = "urgency"
BLOCK_NOTIFY_PEOPLE = "notify_people"
BLOCK_NOTIFY_TEAMS = "notify_teams"
BLOCK_NOTIFY_ROLES = "notify_roles"
BLOCK_SUMMARY = "summary"
# action_ids inside the modal's input blocks (external selects load options by these)
ACTION_EXTERNAL_REF = "external_ref_input"
ACTION_CATEGORY = "category_select"
ACTION_URGENCY = "urgency_select"
ACTION_NOTIFY_PEOPLE = "notify_people_select"
ACTION_NOTIFY_TEAMS = "notify_teams_select"
ACTION_NOTIFY_ROLES = "notify_roles_select"
ACTION_SUMMARY = "summary_input"

# Response modals
HAS_INFO_MODAL = "handover_has_info_modal"
REDIRECT_MODAL = "handover_redirect_modal"

# The referral modal's choices: the domain's vocabulary, re-exported for the Slack layer
CATEGORIES = models.CATEGORIES
URGENCIES = models.URGENCIES
