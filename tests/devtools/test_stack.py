"""The `make run` launcher's decisions that need no processes."""

from devtools.stack import Stack, aws_credentials_configured


def test_local_aws_only_when_no_account_is_configured(tmp_path):
    nowhere = {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    assert not aws_credentials_configured(nowhere)
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        assert aws_credentials_configured(nowhere | {name: "x"})
    (tmp_path / "credentials").write_text("[default]\n")
    assert aws_credentials_configured({"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials")})


def test_a_stack_with_an_aws_account_starts_no_local_endpoint(tmp_path):
    stack = Stack(web_port=8123, env={"AWS_PROFILE": "prod"}, workdir=tmp_path)
    stack.start_local_aws()
    assert not stack.local_aws and not stack.processes and stack.url == "http://127.0.0.1:8123"
