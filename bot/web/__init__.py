"""The HTTP side of `serve`: the Bolt app, the Flask app, the case-system API, the server."""
