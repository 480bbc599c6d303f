"""The provider's Airflow plugin: the flex spend view on the api-server (``spend_view``)."""
