"""Telling the citizen (docs/alerts.md): the feed turns timeline events into `alert` rows,
the sender writes each message in the citizen's language and sends it by email or SMS."""
