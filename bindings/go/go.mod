module github.com/inferlb/inferlb/bindings/go

go 1.19
