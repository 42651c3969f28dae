# The integrators' JSON API (owned by the API work; see meetings/api.py).
urlpatterns: list = []
