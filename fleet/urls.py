from django.urls import path

from fleet import views

app_name = "fleet"

urlpatterns = [
    path("join/<str:meeting_id>/<str:role>", views.join, name="join"),
    path("desktop/<str:meeting_id>/<str:role>", views.desktop, name="desktop"),
    path("fleet/attest", views.attest, name="attest"),
    path("dcv/auth", views.dcv_auth, name="dcv-auth"),
    path("dcv/auth/<str:instance_id>", views.dcv_auth, name="dcv-auth-instance"),
]
