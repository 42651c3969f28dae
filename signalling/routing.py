from django.urls import path

from signalling.consumers import SignallingConsumer

websocket_urlpatterns = [
    path("ws/signalling/", SignallingConsumer.as_asgi()),
]
