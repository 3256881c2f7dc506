#!/bin/bash
cat > greet.sh <<'EOF'
#!/bin/bash
echo "Hello, ${1:-world}!"
EOF
chmod +x greet.sh
