from django.http import HttpResponse


def dashboard(request):
    return HttpResponse("todo")


meeting_new = meeting_detail = meeting_cancel_view = join = dashboard
