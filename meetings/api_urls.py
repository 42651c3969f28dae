# The integrators' JSON API, mounted at /api/v1/ (see meetings/api.py and README "The JSON API for integrators").
from django.urls import re_path

from meetings import api, openapi

urlpatterns = [
    # A trailing slash is accepted too: APPEND_SLASH cannot redirect a POST.
    re_path(r"^meetings/?$", api.meetings_collection, name="api-meetings"),
    re_path(r"^meetings/(?P<meeting_id>[^/]+)/?$", api.meeting_detail, name="api-meeting"),
    re_path(r"^openapi\.json$", openapi.openapi_json, name="api-openapi"),
    re_path(r"^(?P<path>.*)$", api.not_found),
]
