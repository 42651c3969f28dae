from django.urls import include, path

from meetings import views

app_name = "meetings"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("meetings/new", views.meeting_new, name="new"),
    path("meetings/<str:meeting_id>", views.meeting_detail, name="detail"),
    path("meetings/<str:meeting_id>/cancel", views.meeting_cancel_view, name="cancel"),
    path("join/<str:meeting_id>/<str:role>", views.join, name="join"),
    path("api/v1/", include("meetings.api_urls")),
]
