"""WebSub (W3C Recommendation): publishers push changes to the daemon instead of being polled.

* ``discover``: the hub and topic a response names (``Link`` headers first, then the
  document);
* ``signature``: the ``X-Hub-Signature`` check of a delivery;
* ``client``: subscription requests to a hub, through the fetcher's safety rules;
* ``callback``: the endpoint hubs call (verification of intent, deliveries);
* ``manager``: subscribing, renewing and falling back to polling, inside the daemon.

Their SQL is in ``aggregator/store/websub.py``. docs/websub.md is the user's view.
"""
