#!/bin/sh
# A haflowd hook: post each event it gets to a Slack (or Mattermost, or any JSON) webhook.
#
# haflowd runs it with the event as one JSON line on stdin
#   {"time": ..., "type": "member-dead", "node": "node1", "subject": "node3", "detail": {...}}
# and HAFLOWD_EVENT_TYPE, HAFLOWD_EVENT_SUBJECT, HAFLOWD_EVENT_NODE in its environment.
# It is killed with its process group at the hook's timeout; exit != 0 counts as failed
# (haflowd_hook_runs_total{hook,result}).
#
# The webhook URL is a secret: keep it in a file only root (or the hook's user) can read:
#   install -m 0600 /dev/null /etc/haflowd/slack-webhook.url && edit it
set -eu

url_file="${SLACK_WEBHOOK_URL_FILE:-/etc/haflowd/slack-webhook.url}"
url=$(cat "$url_file")
event=$(cat)   # the whole event (small: one JSON object)

# Slack wants {"text": "..."}; the event's JSON goes in as a code block, escaped by jq if
# it is there, else sent as it came with only quotes and backslashes escaped.
text="haflowd: ${HAFLOWD_EVENT_TYPE} ${HAFLOWD_EVENT_SUBJECT} (seen by ${HAFLOWD_EVENT_NODE})"
if command -v jq >/dev/null 2>&1; then
    body=$(printf '%s' "$event" | jq -c --arg t "$text" '{text: ($t + "\n```" + (. | tostring) + "```")}')
else
    esc=$(printf '%s' "$text" | sed 's/\\/\\\\/g; s/"/\\"/g')
    body="{\"text\": \"$esc\"}"
fi

# bounded: haflowd's timeout kills it anyway, but curl's own limits end it cleanly first
exec curl --silent --show-error --fail --max-time 10 --retry 2 --retry-max-time 20 \
    -H 'Content-Type: application/json' --data-binary "$body" "$url"
