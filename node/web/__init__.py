"""What a browser or a scraper sees: the dashboard, Prometheus metrics, the JSON shapes of the views."""
