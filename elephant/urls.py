from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

admin.site.site_header = "Elephant staff console"
admin.site.site_title = "Elephant"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("meetings.urls")),
    path("", include("fleet.urls")),
]

if settings.DEBUG:
    urlpatterns += staticfiles_urlpatterns()
