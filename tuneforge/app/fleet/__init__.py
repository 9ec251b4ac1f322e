"""The worker fleet as the API sees it: GPU classes, routing, and which queues have a live worker."""
