from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("fleet", "0003_host_events"),
    ]

    operations = [
        migrations.AddField(
            model_name="host",
            name="client_token",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="host",
            name="dns_change_id",
            field=models.CharField(blank=True, max_length=64),
        ),
    ]
