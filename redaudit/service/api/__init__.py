"""HTTP routers of the service, mounted under ``/api/v1`` by :func:`redaudit.service.app.create_app`."""
