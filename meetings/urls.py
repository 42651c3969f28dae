from django.urls import include, path

from meetings import views

app_name = "meetings"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("meetings/new", views.meeting_new, name="new"),
    path("meetings/<str:meeting_id>", views.meeting_detail, name="detail"),
    path("meetings/<str:meeting_id>/cancel", views.meeting_cancel_view, name="cancel"),
    path("meetings/<str:meeting_id>/reschedule", views.meeting_reschedule_view, name="reschedule"),
    path("meetings/<str:meeting_id>/calendar/<str:role>.ics", views.meeting_calendar, name="calendar"),
    path("room/<str:meeting_id>", views.room, name="room"),
    path("api/v1/", include("meetings.api_urls")),
]
