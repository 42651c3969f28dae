from django.urls import path

from fleet import views

app_name = "fleet"

urlpatterns = [
    path("dcv/auth", views.dcv_auth, name="dcv-auth"),
    path("dcv/auth/<str:instance_id>", views.dcv_auth, name="dcv-auth-instance"),
]
