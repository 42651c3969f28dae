from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.cache import never_cache


@never_cache
def healthz(request):
    """Liveness for load balancers: answers without touching the database or Redis."""
    return HttpResponse("ok", content_type="text/plain")


admin.site.site_header = "Elephant staff console"
admin.site.site_title = "Elephant"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("meetings.urls")),
    path("", include("fleet.urls")),
]

if settings.DEBUG:
    urlpatterns += staticfiles_urlpatterns()
