"""The AWS deployment: the CDK app, its stack and the Lambda packager."""
